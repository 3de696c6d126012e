"""A served HTML page read as a person reads it: the text of each element with an id, and each table's cells."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)


@dataclass
class Cell:
    """One table cell: its text, and the titles of what it holds (where a shortened id keeps its whole)."""

    text: str
    titles: list[str] = field(default_factory=list)


class Page(HTMLParser):
    """Parse a page; `text(id)`, `rows(table_id)`, `links()` and `ids` answer from it."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: list[str] = []
        self._texts: dict[str, list[str]] = {}
        self._open: list[tuple[str, str | None]] = []
        self._tables: dict[str, list[list[Cell]]] = {}
        self._table: list[str | None] = []
        self._cell: Cell | None = None
        self._links: list[tuple[str, str]] = []
        self._link: tuple[str, list[str]] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Track the element, its id, and the table row or cell it opens."""
        a = dict(attrs)
        element_id = a.get("id")
        if element_id:
            self.ids.append(element_id)
            self._texts.setdefault(element_id, [])
        if tag == "table":
            self._table.append(element_id)
            if element_id:
                self._tables[element_id] = []
        elif tag == "tr" and self._table and self._table[-1]:
            self._tables[str(self._table[-1])].append([])
        elif tag in ("td", "th") and self._table and self._table[-1]:
            self._cell = Cell("")
            self._tables[str(self._table[-1])][-1].append(self._cell)
        elif tag == "a" and a.get("href"):
            self._link = (str(a["href"]), [])
        if self._cell is not None and a.get("title"):
            self._cell.titles.append(str(a["title"]))
        if tag not in _VOID:
            self._open.append((tag, element_id))

    def handle_endtag(self, tag: str) -> None:
        """Close the innermost open element of this tag."""
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                break
        if tag == "table" and self._table:
            self._table.pop()
        elif tag in ("td", "th"):
            self._cell = None
        elif tag == "a" and self._link is not None:
            # Block children (a card's label and number) read as separate words.
            self._links.append((self._link[0], " ".join(" ".join(self._link[1]).split())))
            self._link = None

    def handle_data(self, data: str) -> None:
        """Add text to every open element with an id, and to the open cell and link."""
        for _, element_id in self._open:
            if element_id:
                self._texts[element_id].append(data)
        if self._cell is not None:
            self._cell.text += data
        if self._link is not None:
            self._link[1].append(data)

    def text(self, element_id: str) -> str:
        """The element's text, whitespace collapsed."""
        assert element_id in self._texts, f"no element with id {element_id!r}"
        return " ".join("".join(self._texts[element_id]).split())

    def rows(self, table_id: str) -> list[list[Cell]]:
        """The table's rows after its header row, each cell's text whitespace-collapsed."""
        assert table_id in self._tables, f"no table with id {table_id!r}"
        rows = self._tables[table_id][1:]
        return [[Cell(" ".join(c.text.split()), c.titles) for c in row] for row in rows]

    def links(self) -> list[tuple[str, str]]:
        """Every link: (href, text)."""
        return list(self._links)
