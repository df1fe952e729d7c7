"""Render report sections as a self-contained HTML page (images inlined) and as Markdown."""

from __future__ import annotations

import base64
import html

from sparsecli.report.sections import Section

CSS = """
body { font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f4f4f4; } figure { margin: 1em 0; } img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #555; } nav a { margin-right: 1em; }
"""


def to_html(title: str, sections: list[Section]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>",
           "<nav>" + "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections) + "</nav>"]
    for section in sections:
        out.append(f'<section id="{section.key}"><h2>{html.escape(section.title)}</h2>')
        out += [f"<p>{html.escape(p)}</p>" for p in section.text]
        for table in section.tables:
            if table.caption:
                out.append(f"<h3>{html.escape(table.caption)}</h3>")
            out.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in table.headers) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in table.rows]
            out.append("</table>")
        for fig in section.figures:
            data = base64.b64encode(fig.png).decode()
            out.append(f'<figure><img alt="{html.escape(fig.caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def to_markdown(title: str, sections: list[Section], figure_dir: str) -> str:
    out = [f"# {title}", ""]
    for section in sections:
        out += [f"## {section.title}", ""]
        for p in section.text:
            out += [p, ""]
        for table in section.tables:
            if table.caption:
                out += [f"### {table.caption}", ""]
            out.append("| " + " | ".join(str(h) for h in table.headers) + " |")
            out.append("|" + "---|" * len(table.headers))
            out += ["| " + " | ".join(str(c) for c in row) + " |" for row in table.rows]
            out.append("")
        for fig in section.figures:
            out += [f"![{fig.caption}]({figure_dir}/{fig.name}.png)", ""]
    return "\n".join(out)
