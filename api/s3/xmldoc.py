"""The XML documents of the S3 gateway: answers built as text, request bodies parsed safely
(no DTDs or entities; namespaces ignored)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import datetime, timezone
from urllib.parse import quote
from xml.sax.saxutils import escape

from api.s3.errors import S3Error

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'


def iso(mtime_ns: int) -> str:
    """S3's timestamp form: ``2024-01-31T12:00:00.000Z``."""
    dt = datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def text(value: str, url: bool = False) -> str:
    """``value`` for an element: URL-encoded (``encoding-type=url``) or XML-escaped."""
    return quote(value, safe="/") if url else escape(value)


def element(name: str, value: object) -> str:
    return f"<{name}>{value}</{name}>"


def document(root: str, parts: Iterable[str]) -> bytes:
    return (HEAD + f'<{root} xmlns="{NS}">' + "".join(parts) + f"</{root}>").encode("utf-8")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse(body: bytes, root: str) -> ET.Element:
    """The root element ``root`` of a request body; MalformedXML otherwise."""
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise S3Error("MalformedXML", "the XML you provided is not allowed to hold a DTD")
    try:
        tree = ET.fromstring(body)
    except ET.ParseError as e:
        raise S3Error("MalformedXML", "the XML you provided was not well-formed or did not "
                                      "validate against our published schema") from e
    if _local(tree.tag) != root:
        raise S3Error("MalformedXML", f"the XML root element must be {root}")
    return tree


def children(node: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in node if _local(c.tag) == name]


def child_text(node: ET.Element, name: str) -> str | None:
    found = children(node, name)
    return (found[0].text or "") if found else None
