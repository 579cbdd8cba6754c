"""``pdsearch dashboard RUN_DIR``: optuna-dashboard on the run's study, its objectives named.

The study is wherever the search kept it (the run's study.db, or ``search.storage``).
New studies are named when the search creates them; a run made before that is named
here, so the dashboard's Pareto-front view reads "accuracy / flops / params".
"""
from __future__ import annotations

from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

from pdsearch.errors import PdsearchError
from pdsearch.run.directory import STUDY_DB, load_study, name_objectives, read_setup, storage_url


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # no line per request
        pass


def dashboard(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the run's study until Ctrl-C (127.0.0.1 by default: the dashboard can edit the study)."""
    run_dir, cfg, _ = read_setup(run_dir)
    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise PdsearchError('pdsearch dashboard needs optuna-dashboard: pip install -e ".[dashboard]"') from None
    if cfg.search.storage is None and not (run_dir / STUDY_DB).is_file():  # opening it would create it
        raise PdsearchError(f"{run_dir} has no {STUDY_DB}: the search has not started its study yet")
    url = storage_url(cfg, run_dir)
    name_objectives(load_study(cfg, run_dir), cfg)
    try:
        server = make_server(host, port, wsgi(url), handler_class=_QuietHandler)
    except OSError as exc:
        raise PdsearchError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; choose another --port") from None
    print(f"optuna-dashboard on {url.split('@')[-1]}: http://{host}:{port}/dashboard/  (Ctrl-C stops it)", flush=True)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
