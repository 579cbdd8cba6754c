"""MkDocs hook: the configuration and CLI references are generated from the code at build time.

A page holds a marker; the hook replaces it with ``pdsearch.reference``'s Markdown, so a key or
flag added to the code is in the site with no edit to the docs.
"""
from pdsearch.reference import cli_reference, config_reference

GENERATED = {
    "<!-- generated: configuration reference -->": config_reference,
    "<!-- generated: cli reference -->": cli_reference,
}


def on_page_markdown(markdown: str, page, config, files) -> str:
    for marker, generate in GENERATED.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown
