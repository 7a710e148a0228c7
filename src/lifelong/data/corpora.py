"""Documents of real text read from files every machine of the project can install: Debian's fortune
cookies in four languages, manual pages in three, and Python's own standard library as code.

A domain is a name and a tuple of documents (:class:`TextDomain`). The presets of
:data:`TEXT_DOMAINS` read installed packages (never installing anything; a missing one is one
:class:`DataError` with its ``apt-get`` line, even where other packages put files in its folder, as
many put their translated manual pages in ``/usr/share/man/es``). A user's domain is a folder, one
file, or a list of files. Text files (``.txt``) hold documents separated by blank lines (one or more
empty lines, so a paragraph is a document: a small corpus gives enough documents for a
train/validation split); manual pages (``name.1.gz``, ``name.8``: roff, gzipped or not) are one document
each, as in the ``man-*`` presets, so a folder such as ``/usr/share/man/fr`` is a domain. A folder is
read recursively, in sorted order; a file that is not UTF-8 text (a binary one) is refused, naming it.

``bible-kjv-text`` is not a preset: ``/usr/lib/bible.data`` is the ``bible`` program's own compressed
format (header ``EC02Compressed Data File``), not text.
"""

from __future__ import annotations

import gzip
import re
import sysconfig
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lifelong.errors import DataError, MissingFileError

FORTUNES = Path("/usr/share/games/fortunes")
MANUALS = Path("/usr/share/man")
DPKG_STATUS = Path("/var/lib/dpkg/status")
"""Debian's record of the installed packages."""
MANUAL_PAGE = re.compile(r"\.\d\w*(\.gz)?$")
"""The name of a manual page: a section suffix (``.1``, ``.3pm``), gzipped or not."""


@dataclass(frozen=True)
class TextDomain:
    """A named collection of documents (plain strings) that a text stream trains on as one experience."""

    name: str
    documents: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.documents:
            raise DataError(f"text domain {self.name!r} has no documents")


def _clean(text: str) -> str:
    """Text without overstrike (``X\\bX`` bold, ``_\\bX`` underline of old fortune files) and other control
    characters but newlines and tabs, stripped at both ends."""
    text = re.sub(".\x08", "", text)
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text).strip()


def _files(folder: Path, pattern: str, keep: Callable[[Path], bool] = lambda _: True) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file() and keep(p))


def fortune_documents(text: str) -> list[str]:
    """The fortunes of a fortune file: documents separated by lines holding only ``%``."""
    return [doc for doc in (_clean(part) for part in re.split(r"^%[ \t]*$", text, flags=re.MULTILINE)) if doc]


def _fortune_file(path: Path) -> bool:
    """A fortune file proper: not a ``strfile`` index (``.dat``) nor a ``.u8`` alias, and not a link (the
    English folder links Italian files in from ``it/``)."""
    return path.suffix not in (".dat", ".u8") and not path.is_symlink()


def read_fortunes(folder: Path) -> list[str]:
    """Every fortune of the fortune files directly in ``folder`` (sub-folders are other languages or the
    offensive set)."""
    return [doc for path in _files(folder, "*", _fortune_file)
            for doc in fortune_documents(path.read_text(encoding="utf-8", errors="replace"))]


_TEXT_MACROS = {"B", "I", "SM", "SB", "SH", "SS", "IP", "UR", "MT", "OP",
                "Nm", "Nd", "Sh", "Ss", "Fl", "Ar", "Op", "Xr", "It", "Em", "Sy", "Pa", "Dq", "Ql", "Va", "Cm",
                "Ic", "Fn", "Ft", "Fa", "Ev", "Li", "Dl", "D1", "Er", "Cd", "Dv", "Sq", "Pq", "Tn", "Nx", "Bx"}
"""Macros whose arguments are text (man(7) and mdoc(7)); other macro lines are layout and dropped."""
_ALTERNATING = {"BR", "BI", "IB", "IR", "RB", "RI"}
"""man(7) macros whose arguments alternate fonts and are printed without spaces between them."""
_SPECIAL = {"em": "\u2014", "en": "\u2013", "aq": "'", "dq": '"', "lq": "\u201c", "rq": "\u201d", "oq": "\u2018",
            "cq": "\u2019", "bu": "\u2022", "co": "\u00a9", "rg": "\u00ae", "mi": "-", "hy": "-", "ti": "~",
            "ha": "^", "rs": "\\", "dg": "\u2020", "de": "\u00b0", "mu": "\u00d7", "<=": "\u2264", ">=": "\u2265",
            "->": "\u2192", "<-": "\u2190", "Fo": "\u00ab", "Fc": "\u00bb", "ga": "`", "at": "@", "sh": "#",
            "ba": "|", "pl": "+", "eq": "=", "fo": "\u2039", "fc": "\u203a", "R": "\u00ae"}
_ESCAPE = re.compile(r"\\(?:\(([^\s]{2})|\[([^\]]*)\]|\*(?:\(..|\[[^\]]*\]|.)|f(?:\(..|\[[^\]]*\]|.)"
                     r"|s[+-]?\d+|[nk](?:\(..|\[[^\]]*\]|.)|[hvwo]'[^']*'|(.))")
_LITERAL = {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", "'": "'", "`": "`", ".": ".", '"': ""}


def _escape(match: re.Match[str]) -> str:
    """One roff escape as plain text: special characters by name (``\\(em``, ``\\[aq]``), a literal
    ``\\-``, ``\\e``, ``\\ ``; font, size, string and spacing escapes and unknown ones as nothing."""
    two, bracket, single = match.groups()
    name = two or bracket
    if name is not None:
        return _SPECIAL.get(name, "")
    return _LITERAL.get(single or "", "")


def _arguments(line: str) -> list[str]:
    """The arguments of a macro line (after the macro name), double quotes grouping words."""
    return [quoted.replace('""', '"') or word for quoted, word in re.findall(r'"((?:[^"]|"")*)"?|(\S+)', line)]


def roff_to_text(source: str) -> str:
    """Plain text of a manual page's roff source (man(7) or mdoc(7) macros), reasonably: comment lines
    and layout macros (``.TH``, ``.PP``, ``.TP``, ``.sp``, ``.nf`` ...) dropped, the arguments of text
    macros (``.SH``, ``.B``, ``.BR``, ``.Nm`` ...) kept, macro definitions (``.de`` .. ``..``) skipped,
    escapes such as ``\\fB``, ``\\-`` and ``\\(em`` resolved. A page that only includes another
    (``.so``) is empty: the included page is read itself."""
    lines: list[str] = []
    defining = False
    for raw in source.splitlines():
        if defining:
            defining = raw.strip() != ".."
            continue
        line = re.sub(r'\\".*', "", raw)  # a comment runs to the end of the line
        if line != raw and not line.strip(".' \t"):
            continue  # a comment line
        raw = line
        if raw.startswith((".", "'")):
            name, _, rest = raw[1:].strip().partition(" ")
            if name == "so":
                return ""
            if name in ("de", "de1", "am", "ig"):
                defining = True
                continue
            words = _arguments(rest)
            if name in _ALTERNATING:
                raw = "".join(words)
            elif name == "IP":
                raw = words[0] if words else ""
            elif name in _TEXT_MACROS:
                raw = " ".join(w for w in words if w not in _TEXT_MACROS)
            else:
                continue
        text = _ESCAPE.sub(_escape, raw).rstrip()
        if text or (lines and lines[-1]):
            lines.append(text)
    return _clean("\n".join(lines))


def read_manuals(folder: Path) -> list[str]:
    """The plain text of every gzipped manual page in the ``man*`` sub-folders of ``folder``."""
    documents = []
    for path in _files(folder, "man*/*.gz"):
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
            text = roff_to_text(handle.read())
        if text:
            documents.append(text)
    return documents


def installed(package: str) -> bool | None:
    """Whether Debian's package database lists ``package`` as installed; None on a system without one."""
    if not DPKG_STATUS.is_file():
        return None
    for stanza in DPKG_STATUS.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        if re.search(rf"^Package: {re.escape(package)}$", stanza, flags=re.MULTILINE):
            return re.search(r"^Status: .* installed$", stanza, flags=re.MULTILINE) is not None
    return False


def read_python(folder: Path) -> list[str]:
    """Python's standard library as code: every ``.py`` file under ``folder`` but installed packages
    (``site-packages``, ``dist-packages``) is one document; a file that is not UTF-8 is skipped."""
    documents = []
    for path in _files(folder, "**/*.py", lambda p: not {"site-packages", "dist-packages"} & set(p.parts)):
        try:
            text = _clean(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            continue
        if text:
            documents.append(text)
    return documents


@dataclass(frozen=True)
class TextSource:
    """A preset domain: the Debian ``package`` that installs its text under ``folder``, and ``read``,
    which turns the folder into documents."""

    package: str
    folder: Path
    read: Callable[[Path], list[str]]
    description: str
    packaged: bool = True
    """The folder is the package's (checked in Debian's package database); false for the running Python's
    own standard library, wherever that interpreter was installed from."""

    def domain(self, name: str) -> TextDomain:
        missing = self.packaged and installed(self.package) is False
        documents = [] if missing or not self.folder.is_dir() else self.read(self.folder)
        if not documents:
            found = f"{self.folder} holds other packages' files only" if missing and self.folder.is_dir() \
                else f"no text in {self.folder}"
            raise DataError(f"text domain {name!r} needs the package {self.package} ({found}); "
                            f"install it with `apt-get install -y {self.package}`")
        return TextDomain(name, tuple(documents))


TEXT_DOMAINS = {
    "en": TextSource("fortunes", FORTUNES, read_fortunes, "English fortune cookies"),
    "de": TextSource("fortunes-de", FORTUNES / "de", read_fortunes, "German fortune cookies"),
    "es": TextSource("fortunes-es", FORTUNES / "es", read_fortunes, "Spanish fortune cookies"),
    "it": TextSource("fortunes-it", FORTUNES / "it", read_fortunes, "Italian fortune cookies"),
    "man-en": TextSource("manpages", MANUALS, read_manuals, "English manual pages (every installed package's)"),
    "man-de": TextSource("manpages-de", MANUALS / "de", read_manuals, "German manual pages"),
    "man-es": TextSource("manpages-es", MANUALS / "es", read_manuals, "Spanish manual pages"),
    "python": TextSource("libpython3-stdlib", Path(sysconfig.get_paths()["stdlib"]), read_python,
                         "Python standard library sources (code)", packaged=False),
}
"""Preset text domains by name: which package, folder and reader."""


def paragraphs(text: str) -> list[str]:
    """The documents of a user's text file: blocks separated by one or more blank lines."""
    return [doc for doc in (_clean(block) for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))) if doc]


def read_text(path: Path, domain: str) -> str:
    """A user's file as text: UTF-8, gunzipped when it ends in ``.gz``; a binary file (a NUL byte, or bytes
    that are not UTF-8) is a :class:`DataError` naming it, not text of replacement characters."""
    if not path.is_file():
        raise MissingFileError(f"text domain {domain!r}: no file {path}")
    data = path.read_bytes()
    try:
        data = gzip.decompress(data) if path.suffix == ".gz" else data
        if b"\0" in data:
            raise ValueError("a NUL byte")
        return data.decode("utf-8")
    except (OSError, EOFError, ValueError) as error:  # gzip's errors, NUL, UnicodeDecodeError
        raise DataError(f"text domain {domain!r}: {str(path)!r} is not UTF-8 text ({error}); convert it to UTF-8 "
                        "or remove it from the domain") from None


def file_documents(path: Path, domain: str) -> list[str]:
    """The documents of a user's file: a manual page is one (its roff as plain text), any other file's are
    its paragraphs."""
    text = read_text(path, domain)
    if MANUAL_PAGE.search(path.name):
        page = roff_to_text(text)
        return [page] if page else []
    return paragraphs(text)


def read_files(name: str, files: Iterable[str | Path]) -> TextDomain:
    """A domain of the documents (:func:`file_documents`) of ``files``, in the given order."""
    return TextDomain(name, tuple(doc for path in map(Path, files) for doc in file_documents(path, name)))


def folder_files(folder: Path) -> list[Path]:
    """The text files (``.txt``) and manual pages under ``folder``, recursively, in sorted order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and (p.suffix == ".txt" or MANUAL_PAGE.search(p.name)))


def text_domain(spec: str | Path | Sequence[str | Path] | TextDomain) -> TextDomain:
    """The domain ``spec`` names: a preset of :data:`TEXT_DOMAINS`, a folder (its ``.txt`` files and manual
    pages, :func:`folder_files`), a file, a list of files (named after the first one's folder), or a
    :class:`TextDomain` as it is."""
    if isinstance(spec, TextDomain):
        return spec
    if isinstance(spec, str) and spec in TEXT_DOMAINS:
        return TEXT_DOMAINS[spec].domain(spec)
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if path.is_dir():
            files = folder_files(path)
            if not files:
                raise MissingFileError(f"text domain {spec!r}: no .txt files or manual pages (name.1.gz) in the "
                                       f"folder {path}")
            return read_files(path.name, files)
        if path.is_file():
            return read_files(path.stem, [path])
        raise MissingFileError(f"dataset.domains: {spec!r} is neither a preset ({', '.join(TEXT_DOMAINS)}) nor an "
                               "existing folder or text file")
    files = [Path(p) for p in spec]
    if not files:
        raise DataError("dataset.domains: a domain given as a list of files needs at least one file")
    return read_files(files[0].parent.name or files[0].stem, files)
