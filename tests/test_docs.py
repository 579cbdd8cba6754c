"""The manual cannot drift: references generated from the code, every example checked against it.

YAML blocks in README.md and docs/ are validated against the schema (merged into the quickstart
config first, so a fragment is checked in place); every `pdsearch ...` command line uses a real
verb and real flags (and parses, where it has no placeholder); the API page's Python runs.
"""
import ast
import re
import shlex
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from pdsearch.cli import build_parser
from pdsearch.config import SearchConfig, parse_config
from pdsearch.reference import cli_flags, cli_reference, config_keys, config_reference

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.M | re.S)
NOT_A_CONFIG = re.compile(r"^# (cluster\.yaml|not a search config)")  # first line of a YAML block that is another file


def blocks(language: str, pages=PAGES) -> list[tuple[str, str]]:
    return [(page.name, body) for page in pages for lang, body in FENCE.findall(page.read_text()) if lang == language]


def quickstart() -> dict:
    return yaml.safe_load((ROOT / "search_spaces" / "quickstart.yaml").read_text())


def merged(base: dict, fragment: dict) -> dict:
    out = dict(base)
    for key, value in fragment.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def check_yaml(text: str) -> None:
    """A documented config (or fragment of one) is valid in the quickstart's context; PdsearchError if not."""
    parse_config(merged(quickstart(), yaml.safe_load(text)), "documented config")


def command_lines(text: str) -> list[str]:
    """`pdsearch ...` commands in a shell block (also after `.venv/bin/` and `&&`), comments and continuations joined."""
    text = text.replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        for part in line.split("&&"):
            part = part.strip().removeprefix(".venv/bin/")
            if part.startswith("pdsearch "):
                found.append(part)
    return found


def check_command(line: str, flags: dict[str, set[str]]) -> None:
    """A real verb and real flags; the whole line parses unless it shows placeholders ([--x], A|B, CAPS)."""
    tokens = shlex.split(line)[1:]
    verb = tokens[0]
    assert verb in flags, f"{line}: no verb {verb!r}"
    for token in tokens[1:]:
        flag = token.strip("[]").split("=", 1)[0]
        if flag.startswith("--"):
            assert flag in flags[verb], f"{line}: pdsearch {verb} has no flag {flag}"
    if not re.search(r"[\[\]|]|\.\.\.|\b[A-Z][A-Z_]{2,}\b", line):
        build_parser().parse_args(tokens)  # exits through PdsearchError on a bad value


def check_python(code: str) -> None:
    """Every ``pdsearch.NAME`` a snippet uses is in the API."""
    import pdsearch

    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pdsearch":
            assert node.attr in pdsearch.__all__, f"pdsearch has no {node.attr}"


def test_the_readme_is_short_and_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 12 * 1024 and len(text.splitlines()) <= 200
    first = FENCE.search(text).group(2)
    assert ".venv/bin/pdsearch search search_spaces/quickstart.yaml" in first and ".venv/bin/python -m pytest" in first
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"TEST_COMMAND='(.*)'", ci).group(1) in first


def schema_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """The schema's keys, walked here independently of the reference's own walk."""
    found = set()
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        found.add(key)
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate.__name__ != "Range":
                found |= schema_keys(candidate, key + ".")
    return found


def test_the_configuration_reference_covers_every_key_with_a_description():
    from pdsearch.catalog.objectives import CONSTRAINTS

    keys = {k.name: k for k in config_keys()}
    wanted = schema_keys(SearchConfig) | {f"search.constraints.{c.field}" for c in CONSTRAINTS.values()}
    assert wanted <= set(keys), sorted(wanted - set(keys))
    assert "space.allocators.sensitivity.blend" in keys and "quantization.calibration_batches" in keys
    undocumented = sorted(name for name, k in keys.items() if len(k.description) < 10)
    assert not undocumented, f"keys without a description: {undocumented}"
    text = config_reference()
    assert all(f"`{name}`" in text for name in keys)
    assert "One of: fp32, int8" in text  # a registry's names, read when the reference is made


def test_the_cli_reference_covers_every_verb_and_flag_with_help():
    text = cli_reference()
    parser = build_parser()
    for verb, options in cli_flags().items():
        assert f"## `pdsearch {verb}`" in text
        assert all(f"`{flag}" in text for flag in options if flag not in ("-h", "--help"))
    sub = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    missing = [f"{verb} {a.dest}" for verb, p in sub.choices.items() for a in p._actions
               if not a.help and a.dest != "help"]
    assert not missing, f"arguments without help: {missing}"


def test_every_yaml_config_in_the_docs_is_valid():
    found = [(page, body) for page, body in blocks("yaml") if not NOT_A_CONFIG.match(body)]
    assert len(found) >= 6
    for page, body in found:
        try:
            check_yaml(body)
        except Exception as exc:
            pytest.fail(f"{page}: {exc}\n{body}")


def test_every_pdsearch_command_in_the_docs_uses_real_verbs_and_flags():
    flags = cli_flags()
    lines = [(page, line) for page, body in blocks("bash") for line in command_lines(body)]
    assert len(lines) >= 20 and {line.split()[1] for _, line in lines} >= {"search", "plan", "select", "report"}
    for page, line in lines:
        try:
            check_command(line, flags)
        except Exception as exc:
            pytest.fail(f"{page}: {exc}")


def test_every_api_name_in_the_docs_exists():
    snippets = blocks("python")
    assert len(snippets) >= 3
    for page, code in snippets:
        check_python(code)


def test_a_wrong_key_flag_or_api_name_in_an_example_fails_its_check():
    from pdsearch.errors import PdsearchError

    check_yaml("space:\n  precision: [fp32, int8]\nquantization:\n  calibration_batches: 4\n")
    with pytest.raises(PdsearchError, match="quantization.calibration_batchez: unknown key"):
        check_yaml("quantization:\n  calibration_batchez: 4\n")
    flags = cli_flags()
    check_command("pdsearch select runs/qs --precision int8 --export m.onnx", flags)
    with pytest.raises(AssertionError, match="has no flag --precison"):
        check_command("pdsearch select runs/qs --precison int8 --export m.onnx", flags)
    with pytest.raises(AssertionError, match="no verb 'prune'"):
        check_command("pdsearch prune runs/qs", flags)
    with pytest.raises(PdsearchError, match="invalid float value"):  # no placeholder: the whole line is parsed
        check_command("pdsearch plan --model resnet20 --gpr thirty", flags)
    check_python("import pdsearch\npdsearch.select('runs/qs')")
    with pytest.raises(AssertionError, match="pdsearch has no selekt"):
        check_python("import pdsearch\npdsearch.selekt('runs/qs')")


@pytest.mark.slow  # a search, an export and resnet50's analysis (CI runs it)
def test_the_python_examples_of_the_api_page_run(tmp_path, monkeypatch, ray_session):
    from configs import tiny_config

    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "quickstart.yaml").write_text(tiny_config().to_yaml())
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for _, code in blocks("python", [ROOT / "docs" / "api.md"]):
        exec(compile(code, "api.md", "exec"), namespace)
    assert (tmp_path / "pruned.pt2").is_file() and namespace["result"].counts["ok"] >= 1


def build_site(out: Path) -> subprocess.CompletedProcess:
    mkdocs = [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)]
    return subprocess.run(mkdocs, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})


@pytest.mark.slow  # builds the site (CI also builds it in .ci/run) and opens it in Chromium
def test_the_built_site_searches_offline_for_a_config_key(tmp_path):
    from test_watch import CHROMIUM

    if CHROMIUM is None:
        if __import__("os").environ.get("CI"):
            pytest.fail("CI must have Chromium for the site test (.ci/run installs Debian's chromium)")
        pytest.skip("no Chromium here (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    site = tmp_path / "site"
    built = build_site(site)
    assert built.returncode == 0, built.stderr[-3000:]
    assert "calibration_batches" in (site / "reference" / "configuration" / "index.html").read_text()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    home = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            outside = []
            page.on("request", lambda r: None if r.url.startswith(home) or r.url.startswith("data:")
                    else outside.append(r.url))
            page.goto(home)
            page.screenshot(path=str(tmp_path / "home.png"))
            assert "pdsearch" in page.title()
            page.locator(".md-search__input").first.click()
            page.keyboard.type("calibration_batches")  # key by key, as Material's search listens to typing
            hit = page.locator(".md-search-result__item a[href*='reference/configuration']").first
            hit.wait_for(state="visible", timeout=30_000)
            hit.click()
            page.wait_for_url("**/reference/configuration/**", timeout=30_000)
            assert page.locator("text=quantization.calibration_batches").first.is_visible()
            page.screenshot(path=str(tmp_path / "found.png"))
            browser.close()
    finally:
        server.shutdown()
    assert (tmp_path / "home.png").stat().st_size > 10_000
    assert not [u for u in outside if "127.0.0.1" not in u and not u.startswith("blob:")], outside
