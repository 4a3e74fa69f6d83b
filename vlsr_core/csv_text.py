"""What a file given as CSV is when it is not text: the curator's spreadsheet saved in another
format. Shared by the CSV importer and the label-map import, so both name it alike."""

import codecs

_PRINTABLE = set(range(0x20, 0x7F)) | {9, 10, 13}


def not_text(data, nul=False):
    """Why the bytes ``data`` of a file given as CSV are not CSV text, said after its path
    (``is compressed (gzip), ...``) with what to do, or None; with ``nul``, UTF-8 text holding
    a few NUL characters is text (a label map exported from a run whose labels hold some)."""
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        return "is UTF-16 text (a spreadsheet's \"Unicode Text\"): save it as \"CSV UTF-8\""
    if data[:4] == b"PK\x03\x04":  # (a zip: an .xlsx or .ods workbook)
        return "is a workbook or zip archive, not a CSV file: save it as \"CSV UTF-8\" (or unzip it)"
    if data[:2] == b"\x1f\x8b":
        return "is compressed (gzip), not a CSV file: decompress it first"
    if b"\x00" not in data[:65536]:
        return None
    if nul and data.count(0) * 10 <= len(data):  # (a binary header is mostly NUL)
        try:
            data.decode("utf-8")
            return None
        except UnicodeDecodeError:
            pass
    # UTF-16 without its byte order mark: every other byte of ASCII text is NUL, and the others
    # text (an executable's header is mostly NUL too)
    utf16 = any(len(zeros) > 1 and zeros.count(0) >= 0.9 * len(zeros)
                and sum(b in _PRINTABLE for b in chars) >= 0.9 * len(chars)
                for zeros, chars in ((data[1:400:2], data[0:400:2]),
                                     (data[0:400:2], data[1:400:2])))
    return "is a binary file (it holds NUL bytes), not a CSV file" + (
        "; it looks like UTF-16 text (a spreadsheet's \"Unicode Text\"): save it as \"CSV UTF-8\""
        if utf16 else "")
