"""Training text from installed Debian packages, for `t1 data pairs --source NAME`.

The model has only seen scientific abstracts; these sources add a dictionary of English
(WordNet), a dictionary of computing (FOLDOC), the Python documentation and the Linux man
pages. Each reader turns one package's files into plain-text `Document`s, in a fixed order,
and takes a `root` folder laid out like the package's (the installed one by default).
"""

from __future__ import annotations

import gzip
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, NamedTuple

from ..data import Document
from ..errors import T1Error

MAX_WORDS = 300  # a long doc section or man page keeps its first sentences up to this many words
MIN_SECTION_WORDS = 20


class Source(NamedTuple):
    package: str
    licence: str
    description: str
    reader: Callable[..., list[Document]]
    kinds: tuple[str, ...]  # the pair kinds its documents suit: a headword is a term, not a title


def clean(text: str) -> str:
    return " ".join(text.split())


def truncate(text: str, words: int = MAX_WORDS) -> str:
    """The first `words` words, cut back to the last sentence end when one is past the half."""
    kept = text.split()
    if len(kept) <= words:
        return text
    kept = kept[:words]
    for i in range(words - 1, words // 2, -1):
        if kept[i].endswith((".", "!", "?")):
            return " ".join(kept[:i + 1])
    return " ".join(kept)


def spread(docs: list[Document], limit: int | None) -> list[Document]:
    """`limit` documents evenly spaced over the whole source (not its first file or letter)."""
    if limit is None or limit >= len(docs):
        return docs
    return [docs[i * len(docs) // limit] for i in range(limit)]


def _require(path: Path, package: str) -> Path:
    if not path.exists():
        raise T1Error(f"{path}: not found; install the Debian package: apt-get install {package}")
    return path


# WordNet: data.<pos> lines are `offset lex_file type word_count(hex) [word lex_id]... pointers | gloss`;
# lines that start with spaces are the licence header.
WORDNET_ROOT = "/usr/share/wordnet"
_ADJECTIVE_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def _synset(line: str, pos: str) -> Document:
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    words = fields[4:4 + 2 * int(fields[3], 16):2]
    lemmas = dict.fromkeys(_ADJECTIVE_MARKER.sub("", w).replace("_", " ") for w in words)
    return Document(f"wordnet:{pos}:{fields[0]}", clean(gloss), ", ".join(lemmas))


def read_wordnet(root: str | Path | None = None, limit: int | None = None) -> list[Document]:
    """One document per synset: its lemmas as the title, its gloss (definition; "examples") as text."""
    root = Path(root or WORDNET_ROOT)
    _require(root / "data.noun", "wordnet-base")
    docs = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = root / f"data.{pos}"
        if path.exists():
            with open(path, encoding="utf-8", errors="replace") as f:
                docs += [_synset(line, pos) for line in f if line[:1].isdigit()]
    return spread([d for d in docs if d.text], limit)


# FOLDOC in dictd format: foldoc.index lines `headword TAB offset TAB length` (base 64) into the
# gzip-readable foldoc.dict.dz; an entry is its headword lines, a blank line, then the body.
FOLDOC_ROOT = "/usr/share/dictd"
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_LINK = re.compile(r"\{([^{}]*?)(?:\s*\([^{}]*\))?\}")  # {text} or {text (target)} -> text
_BARE_LINK = re.compile(r"\{\s*\([^{}]*\)\}\.?")  # a link with no text: {(rfc:1960)}.
_CATEGORIES = re.compile(r"<[a-zA-Z][\w ,/+-]*>")  # subject tags: <programming, language> (not <a@b.c>)
_NOTE_LINE = re.compile(r"^\s*(?:\(\d{4}-\d\d-\d\d\)|\[.*\])\s*$")  # a last-update date or a [source]


def _base64(value: str) -> int:
    number = 0
    for char in value:
        number = number * 64 + _B64[char]
    return number


def _foldoc_entry(entry: str, offset: int) -> Document | None:
    head, _, body = entry.strip("\n").partition("\n\n")
    lines = [line for line in body.splitlines() if not _NOTE_LINE.match(line)]
    text = clean(_LINK.sub(r"\1", _BARE_LINK.sub("", _CATEGORIES.sub("", "\n".join(lines)))))
    title = head.splitlines()[0].strip() if head.strip() else ""
    return Document(f"foldoc:{offset}", text, title) if title and text else None


def read_foldoc(root: str | Path | None = None, limit: int | None = None) -> list[Document]:
    """One document per entry (aliases share one): the headword as the title, the body as text,
    cross-references {like this} kept as plain words."""
    root = Path(root or FOLDOC_ROOT)
    index = _require(root / "foldoc.index", "dict-foldoc")
    with gzip.open(_require(root / "foldoc.dict.dz", "dict-foldoc")) as f:
        data = f.read()
    spans = set()
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and not fields[0].startswith("00-database"):
            spans.add((_base64(fields[1]), _base64(fields[2])))
    docs = [_foldoc_entry(data[start:start + size].decode("utf-8", "replace"), start) for start, size in sorted(spans)]
    return spread([d for d in docs if d], limit)


# Python documentation (Sphinx HTML): the text of <div role="main">, cut at each h1/h2/h3.
PYTHON_DOCS_ROOT = "/usr/share/doc/python3.11/html"
PYTHON_DOCS_PARTS = ("library", "reference", "tutorial", "howto", "faq")
_SKIPPED_TAGS = {"pre", "script", "style"}  # code blocks
_SKIPPED_CLASSES = {"headerlink", "toctree-wrapper", "admonition-title"}  # ¶ links, tables of contents
_BLOCKS = {"p", "li", "dt", "dd", "div", "td", "th", "tr", "table", "blockquote", "section"}
_HEADINGS = {"h1", "h2", "h3"}
_CODE_BLOCK = re.compile(r"<pre\b.*?</pre>", re.S)  # cut before parsing: its highlighting tags are most of a page


class _SectionParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[tuple[str, str, list[str]]] = []  # (anchor, heading, text parts)
        self.main = 0  # <div> depth inside the main div, 0 outside it
        self.skipping: list = []  # [tag, depth] of an element whose text is left out
        self.heading: list[str] | None = None
        self.anchor = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and (self.main or attrs.get("role") == "main"):
            self.main += 1
        if not self.main:
            return
        if self.skipping:
            self.skipping[1] += tag == self.skipping[0]
        elif tag in _SKIPPED_TAGS or _SKIPPED_CLASSES & set((attrs.get("class") or "").split()):
            self.skipping = [tag, 1]
        elif tag == "section":
            self.anchor = attrs.get("id") or self.anchor
        elif tag in _HEADINGS:
            self.heading = []

    def handle_endtag(self, tag):
        if not self.main:
            return
        if tag == "div":
            self.main -= 1
        if self.skipping:
            self.skipping[1] -= tag == self.skipping[0]
            if self.skipping[1] == 0:
                self.skipping = []
        elif tag in _HEADINGS and self.heading is not None:
            self.sections.append((self.anchor, clean("".join(self.heading)), []))
            self.heading = None
        elif tag in _BLOCKS and self.sections:
            self.sections[-1][2].append(" ")

    def handle_data(self, data):
        if not self.main or self.skipping:
            return
        if self.heading is not None:
            self.heading.append(data)
        elif self.sections:
            self.sections[-1][2].append(data)


def _page_sections(path: Path, name: str) -> list[Document]:
    parser = _SectionParser()
    parser.feed(_CODE_BLOCK.sub("", path.read_text(encoding="utf-8", errors="replace")))
    if not parser.sections:
        return []
    page = parser.sections[0][1]
    docs = []
    for i, (anchor, heading, parts) in enumerate(parser.sections):
        text = clean("".join(parts))
        if len(text.split()) >= MIN_SECTION_WORDS:
            title = page if i == 0 else f"{page}: {heading}"
            docs.append(Document(f"python-docs:{name}#{anchor or i}", truncate(text), title))
    return docs


def read_python_docs(root: str | Path | None = None, limit: int | None = None) -> list[Document]:
    """One document per h1/h2/h3 section of the library, reference, tutorial, howto and faq
    pages: "page title: heading" as the title, its prose as text (code blocks left out)."""
    root = Path(root or PYTHON_DOCS_ROOT)
    _require(root / "library", "python3.11-doc")
    docs = []
    for part in PYTHON_DOCS_PARTS:
        for path in sorted((root / part).glob("**/*.html")):
            docs += _page_sections(path, path.relative_to(root).as_posix())
    return spread(docs, limit)


# Linux man pages (roff): NAME and DESCRIPTION of each page of sections 2-7.
MAN_ROOT = "/usr/share/man"
MAN_PACKAGES = ("manpages", "manpages-dev")  # the Linux man-pages project (manpages-dev: sections 2-3)
DPKG_INFO = Path("/var/lib/dpkg/info")
_ROFF_ESCAPE = re.compile(r"""\\(?:
    f(?:\[[^\]]*\]|\(..|.) | s[-+]?\d+         # font and size changes: dropped
    | \*(?:\[([^\]]*)\]|\((..)|(.))             # strings: \*(lq \*[R] \*R
    | \((..) | \[([^\]]*)\]                     # named characters: \(em \[aq]
    | (.))                                    # one character: \- \e \&""", re.VERBOSE)
_ROFF_NAMED = {"em": "—", "en": "–", "aq": "'", "dq": '"', "lq": '"', "rq": '"', "oq": "'", "cq": "'",
               "bu": "", "hy": "-", "mi": "-", "pl": "+", "mu": "×", "ti": "~", "ha": "^", "rs": "\\",
               "at": "@", "sh": "#", "Do": "$", "ga": "`", "ul": "_", "ba": "|", "or": "|", "sl": "/",
               "lB": "[", "rB": "]", "lC": "{", "rC": "}", "<=": "≤", ">=": "≥", "!=": "≠", "->": "→",
               "co": "©", "rg": "®", "tm": "™", "R": "®", "Tm": "™", "dg": "†", "de": "°", "sc": "§"}
_ROFF_CHARS = {"e": "\\", "-": "-", "~": " ", " ": " ", "0": " ", "&": "", "|": "", "^": "", "%": "", "c": "",
               "/": "", ",": "", ":": ""}
_ROFF_ARGS = re.compile(r'"((?:[^"]|"")*)"?|(\S+)')
_ROFF_SKIPPED = {"TS": ".TE", "EX": ".EE", "de": ".."}  # tables, code examples, macro definitions: to their end


def _roff_text(text: str) -> str:
    def replace(m: re.Match) -> str:
        named = next((g for g in m.groups()[:5] if g is not None), None)
        if named is not None:
            return _ROFF_NAMED.get(named, "")
        char = m.group(6)
        return "" if char is None else _ROFF_CHARS.get(char, char)

    text = re.sub(r'(?<!\\)\\(?:".*|$)', "", text)  # a \" comment, a \ continuing the line
    return _ROFF_ESCAPE.sub(replace, text)


def _roff_macro(name: str, args: str) -> str | None:
    """The text a macro line shows (font macros), or None for one that shows nothing."""
    words = [m[2] if m[2] is not None else m[1].replace('""', '"') for m in _ROFF_ARGS.finditer(args)]
    if name in ("B", "I", "SM", "SB", "SS"):
        return " ".join(words)
    if name in ("BR", "RB", "IR", "RI", "BI", "IB", "UE", "ME"):  # alternating fonts join without spaces
        return "".join(words)
    return None


def _man_sections(source: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current, skip_until = None, None
    for line in source.splitlines():
        if skip_until:
            skip_until = None if line.startswith(skip_until) else skip_until
            continue
        if line.startswith((".", "'")):
            name, _, args = line[1:].strip().partition(" ")
            if name in _ROFF_SKIPPED:
                skip_until = _ROFF_SKIPPED[name]
            elif name == "SH":
                current = clean(args.replace('"', "")).upper()
                sections.setdefault(current, [])
            elif current is not None and (shown := _roff_macro(name, args)):
                sections[current].append(_roff_text(shown))
        elif current is not None:
            sections[current].append(_roff_text(line))
    return sections


def _man_page(path: Path, name: str) -> Document | None:
    with gzip.open(path) as f:
        sections = _man_sections(f.read().decode("utf-8", "replace"))
    title = clean(" ".join(sections.get("NAME", [])))
    text = clean(" ".join(sections.get("DESCRIPTION", [])))
    return Document(f"manpages:{name}", truncate(text), title) if title and text else None


def read_manpages(root: str | Path | None = None, limit: int | None = None) -> list[Document]:
    """One document per page of sections 2-7: the NAME line ("pipe - overview of pipes and
    FIFOs") as the title, the DESCRIPTION as text. The installed tree holds other packages'
    pages too, so only files the man-pages packages installed are read; a `root` is read whole."""
    base = Path(root or MAN_ROOT)
    _require(base if root else DPKG_INFO / f"{MAN_PACKAGES[0]}.list", MAN_PACKAGES[0])
    files = [p for s in "234567" for p in sorted((base / f"man{s}").glob("*.gz")) if not p.is_symlink()]
    if root is None:
        owned = {line.strip() for pkg in MAN_PACKAGES if (DPKG_INFO / f"{pkg}.list").exists()
                 for line in (DPKG_INFO / f"{pkg}.list").read_text().splitlines()}
        files = [p for p in files if str(p) in owned]
    docs = [_man_page(p, p.relative_to(base).as_posix().removesuffix(".gz")) for p in files]
    return spread([d for d in docs if d], limit)


SOURCES: dict[str, Source] = {
    "wordnet": Source("wordnet-base", "WordNet 3.0 licence (BSD-style)",
                      "English dictionary: one document per synset, its lemmas -> its gloss", read_wordnet,
                      ("term",)),  # a gloss is one sentence and its examples: no sentence pairs
    "foldoc": Source("dict-foldoc", "GFDL", "Free On-line Dictionary of Computing: headword -> definition",
                     read_foldoc, ("term", "sentence")),
    "python-docs": Source("python3.11-doc", "PSF licence",
                          "Python 3.11 documentation: one document per section", read_python_docs,
                          ("title", "sentence")),
    "manpages": Source("manpages", "GPL-2+ and other free licences (/usr/share/doc/manpages/copyright)",
                       "Linux man pages, sections 2-7: NAME line -> DESCRIPTION", read_manpages,
                       ("title", "sentence")),
}


def check_source(name: str) -> str:
    if name not in SOURCES:
        raise T1Error(f"unknown source {name!r} (use {', '.join(SOURCES)})")
    return name


def read_source(name: str, root: str | Path | None = None, limit: int | None = None) -> list[Document]:
    return SOURCES[check_source(name)].reader(root, limit)
