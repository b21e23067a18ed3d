"""The parts of Parquet's Thrift metadata that row selection needs, read by field id.

``parse_file_metadata`` turns the footer (a ``FileMetaData`` struct) into row-group
and column-chunk descriptions plus the schema tree split per top-level field;
``parse_offset_index`` reads one column chunk's page locations into numpy arrays;
``parse_page_header`` reads the header in front of every page. The decoded
structs are kept (``raw``) so a new footer can be written from them.

Field ids follow parquet-format's ``parquet.thrift``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from quiver.superfile.errors import CorruptFileError
from quiver.superfile.parquet_pages.thrift_compact import Struct, TList, TType, decode_struct

# FileMetaData
FMD_VERSION, FMD_SCHEMA, FMD_NUM_ROWS, FMD_ROW_GROUPS = 1, 2, 3, 4
FMD_KV, FMD_CREATED_BY, FMD_COLUMN_ORDERS, FMD_ENCRYPTION = 5, 6, 7, 8
# SchemaElement
SE_NAME, SE_NUM_CHILDREN = 4, 5
# KeyValue
KV_KEY, KV_VALUE = 1, 2
# RowGroup
RG_COLUMNS, RG_TOTAL_BYTE_SIZE, RG_NUM_ROWS = 1, 2, 3
# ColumnChunk
CC_FILE_PATH, CC_FILE_OFFSET, CC_META, CC_OI_OFFSET, CC_OI_LENGTH = 1, 2, 3, 4, 5
CC_CRYPTO, CC_ENCRYPTED_META = 8, 9
# ColumnMetaData
CMD_TYPE, CMD_ENCODINGS, CMD_PATH, CMD_CODEC, CMD_NUM_VALUES = 1, 2, 3, 4, 5
CMD_TOTAL_UNCOMPRESSED, CMD_TOTAL_COMPRESSED, CMD_KV = 6, 7, 8
CMD_DATA_PAGE_OFFSET, CMD_DICT_PAGE_OFFSET, CMD_ENCODING_STATS = 9, 11, 13
# PageEncodingStats
PES_PAGE_TYPE, PES_ENCODING, PES_COUNT = 1, 2, 3
# OffsetIndex / PageLocation
OI_PAGE_LOCATIONS = 1
PL_OFFSET, PL_SIZE, PL_FIRST_ROW = 1, 2, 3
# PageHeader and its per-kind headers
PH_TYPE, PH_UNCOMPRESSED, PH_COMPRESSED = 1, 2, 3
PH_DATA_V1, PH_DICT, PH_DATA_V2 = 5, 7, 8
DPH_NUM_VALUES, DPH_ENCODING = 1, 2
DPH2_NUM_VALUES, DPH2_NUM_ROWS, DPH2_ENCODING = 1, 3, 4

PAGE_DATA, PAGE_INDEX, PAGE_DICTIONARY, PAGE_DATA_V2 = 0, 1, 2, 3
DICTIONARY_ENCODINGS = frozenset({2, 8})  # PLAIN_DICTIONARY, RLE_DICTIONARY

_INTS = (TType.I8, TType.I16, TType.I32, TType.I64)


def field(s: Struct, fid: int, kind: TType | tuple[TType, ...], what: str,
          default: Any = ...) -> Any:
    """Field ``fid`` of ``s``, checked to be of ``kind``; missing -> ``default`` or an error."""
    got = s.get(fid)
    if got is None:
        if default is ...:
            raise CorruptFileError(f"Parquet metadata: {what} is missing")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if got[0] not in kinds:
        raise CorruptFileError(f"Parquet metadata: {what} has thrift type {got[0].name}")
    return got[1]


def _int(s: Struct, fid: int, what: str, default: Any = ..., minimum: int = 0) -> Any:
    value = field(s, fid, _INTS, what, default)
    if value is not default and value < minimum:
        raise CorruptFileError(f"Parquet metadata: {what} is {value}")
    return value


def _list(s: Struct, fid: int, elem: TType, what: str) -> list[Any]:
    value: TList = field(s, fid, TType.LIST, what)
    if value.items and value.elem_type != elem:
        raise CorruptFileError(f"Parquet metadata: {what} holds {value.elem_type.name}")
    return value.items


@dataclass(frozen=True)
class ColumnChunkInfo:
    """One column chunk: where its pages and its offset index are."""

    path: tuple[str, ...]
    num_values: int
    total_compressed_size: int
    data_page_offset: int
    dictionary_page_offset: int | None
    offset_index: tuple[int, int] | None
    dict_encoded_pages: int | None  # leading data pages that need the dictionary, if known
    raw: Struct

    @property
    def start(self) -> int:
        return self.dictionary_page_offset if self.dictionary_page_offset is not None \
            else self.data_page_offset


@dataclass(frozen=True)
class RowGroupInfo:
    num_rows: int
    columns: list[ColumnChunkInfo]


@dataclass(frozen=True)
class TopField:
    """One top-level field: its schema elements and its leaf columns (half-open ranges)."""

    name: str
    schema_range: tuple[int, int]
    leaf_range: tuple[int, int]


@dataclass
class FileMetadata:
    raw: Struct
    num_rows: int
    row_groups: list[RowGroupInfo]
    row_starts: np.ndarray  # int64, len = row groups + 1
    fields: list[TopField]
    schema: list[Struct]
    key_value: list[tuple[bytes, bytes | None]]

    def find_field(self, name: str) -> TopField | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


def _schema_fields(schema: list[Struct]) -> list[TopField]:
    if not schema:
        raise CorruptFileError("Parquet metadata: empty schema")
    root_children = _int(schema[0], SE_NUM_CHILDREN, "root num_children", 0)
    fields: list[TopField] = []
    pos, leaf = 1, 0
    for _ in range(root_children):
        if pos >= len(schema):
            raise CorruptFileError("Parquet metadata: schema tree runs past its elements")
        start, first_leaf = pos, leaf
        name = field(schema[pos], SE_NAME, TType.BINARY, "schema element name")
        # Walk the subtree depth first, counting the elements still owed at each level.
        owed = 1
        while owed:
            if pos >= len(schema):
                raise CorruptFileError("Parquet metadata: schema tree runs past its elements")
            children = _int(schema[pos], SE_NUM_CHILDREN, "num_children", None)
            owed -= 1
            if children is None:
                leaf += 1
            else:
                owed += children
            pos += 1
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptFileError("Parquet metadata: schema name is not UTF-8") from None
        fields.append(TopField(text, (start, pos), (first_leaf, leaf)))
    if pos != len(schema):
        raise CorruptFileError("Parquet metadata: schema has elements outside the tree")
    return fields


def _dict_encoded_pages(md: Struct) -> int | None:
    stats = md.get(CMD_ENCODING_STATS)
    if stats is None or stats[0] != TType.LIST:
        return None
    count = 0
    for s in stats[1].items:
        if not isinstance(s, dict):
            return None
        page_type, encoding, n = (s.get(k, (None, None))[1]
                                  for k in (PES_PAGE_TYPE, PES_ENCODING, PES_COUNT))
        if not all(isinstance(v, int) for v in (page_type, encoding, n)):
            return None
        if page_type in (PAGE_DATA, PAGE_DATA_V2) and encoding in DICTIONARY_ENCODINGS:
            count += n
    return count


def _column_chunk(cc: Struct) -> ColumnChunkInfo:
    if CC_CRYPTO in cc or CC_ENCRYPTED_META in cc:
        raise CorruptFileError("encrypted Parquet columns are not supported")
    if CC_FILE_PATH in cc:
        raise CorruptFileError("Parquet column chunks in other files are not supported")
    md = field(cc, CC_META, TType.STRUCT, "column meta_data")
    path = tuple(
        p.decode("utf-8", "replace") for p in _list(md, CMD_PATH, TType.BINARY, "path_in_schema")
    )
    data_off = _int(md, CMD_DATA_PAGE_OFFSET, "data_page_offset")  # 0 in empty row groups
    dict_off = _int(md, CMD_DICT_PAGE_OFFSET, "dictionary_page_offset", None)
    if dict_off is not None and not 4 <= dict_off < data_off:
        dict_off = None  # some writers put 0 here to mean "no dictionary"
    oi_off = _int(cc, CC_OI_OFFSET, "offset_index_offset", None)
    oi_len = _int(cc, CC_OI_LENGTH, "offset_index_length", None)
    oi = (oi_off, oi_len) if oi_off is not None and oi_len else None
    return ColumnChunkInfo(
        path=path,
        num_values=_int(md, CMD_NUM_VALUES, "num_values"),
        total_compressed_size=_int(md, CMD_TOTAL_COMPRESSED, "total_compressed_size"),
        data_page_offset=data_off,
        dictionary_page_offset=dict_off,
        offset_index=oi,
        dict_encoded_pages=_dict_encoded_pages(md),
        raw=cc,
    )


def parse_file_metadata(footer: bytes | memoryview) -> FileMetadata:
    """Decodes a Parquet footer (the thrift ``FileMetaData`` bytes, without length and magic)."""
    raw, end = decode_struct(footer)
    if end != len(footer):
        raise CorruptFileError(f"Parquet footer has {len(footer) - end} trailing bytes")
    if FMD_ENCRYPTION in raw:
        raise CorruptFileError("encrypted Parquet files are not supported")
    schema = _list(raw, FMD_SCHEMA, TType.STRUCT, "schema")
    fields = _schema_fields(schema)
    n_leaves = fields[-1].leaf_range[1] if fields else 0
    num_rows = _int(raw, FMD_NUM_ROWS, "num_rows")
    groups: list[RowGroupInfo] = []
    for rg in _list(raw, FMD_ROW_GROUPS, TType.STRUCT, "row_groups"):
        cols = [_column_chunk(c) for c in _list(rg, RG_COLUMNS, TType.STRUCT, "columns")]
        if len(cols) != n_leaves:
            raise CorruptFileError(
                f"Parquet row group has {len(cols)} column chunks for {n_leaves} leaf columns"
            )
        groups.append(RowGroupInfo(_int(rg, RG_NUM_ROWS, "row group num_rows"), cols))
    starts = np.zeros(len(groups) + 1, dtype=np.int64)
    np.cumsum([g.num_rows for g in groups], out=starts[1:])
    if starts[-1] != num_rows:
        raise CorruptFileError(
            f"Parquet footer says {num_rows} rows but its row groups hold {int(starts[-1])}"
        )
    kv: list[tuple[bytes, bytes | None]] = []
    if FMD_KV in raw:
        for item in _list(raw, FMD_KV, TType.STRUCT, "key_value_metadata"):
            kv.append((field(item, KV_KEY, TType.BINARY, "metadata key"),
                       field(item, KV_VALUE, TType.BINARY, "metadata value", None)))
    return FileMetadata(raw, num_rows, groups, starts, fields, schema, kv)


@dataclass(frozen=True)
class PageIndex:
    """One column chunk's OffsetIndex: page byte ranges and the first row of each page."""

    offsets: np.ndarray
    sizes: np.ndarray
    first_rows: np.ndarray


def parse_offset_index(buf: bytes | memoryview, chunk: ColumnChunkInfo,
                       num_rows: int) -> PageIndex:
    """Decodes an OffsetIndex and checks it against its column chunk and row group."""
    raw, _ = decode_struct(buf)
    locs = _list(raw, OI_PAGE_LOCATIONS, TType.STRUCT, "page_locations")
    if not locs and num_rows:
        raise CorruptFileError("Parquet offset index lists no pages")
    offsets = np.fromiter((_int(p, PL_OFFSET, "page offset") for p in locs), np.int64, len(locs))
    sizes = np.fromiter((_int(p, PL_SIZE, "page size", minimum=1) for p in locs), np.int64,
                        len(locs))
    first = np.fromiter((_int(p, PL_FIRST_ROW, "first_row_index") for p in locs), np.int64,
                        len(locs))
    chunk_end = chunk.start + chunk.total_compressed_size
    if len(locs) and (
        first[0] != 0
        # Writers may emit an empty page that shares the next page's first row.
        or np.any(np.diff(first) < 0)
        or first[-1] > num_rows
        or offsets[0] < chunk.data_page_offset
        or np.any(offsets[1:] < offsets[:-1] + sizes[:-1])
        or offsets[-1] + sizes[-1] > chunk_end
    ):
        raise CorruptFileError(f"Parquet offset index of column {'.'.join(chunk.path)} is "
                               "inconsistent with its column chunk")
    return PageIndex(offsets, sizes, first)


@dataclass(frozen=True)
class PageHeaderInfo:
    page_type: int
    header_length: int
    uncompressed_size: int
    compressed_size: int
    num_values: int
    dictionary_encoded: bool
    num_rows: int | None  # only data page v2 headers say how many rows they hold


def parse_page_header(page: bytes | memoryview) -> PageHeaderInfo:
    """Decodes the header at the front of ``page`` and checks that the page is exactly whole."""
    raw, hlen = decode_struct(page)
    ptype = _int(raw, PH_TYPE, "page type")
    comp = _int(raw, PH_COMPRESSED, "compressed_page_size")
    if hlen + comp != len(page):
        raise CorruptFileError(
            f"Parquet page header says {hlen + comp} bytes where the page index says {len(page)}"
        )
    num_values, encoding, num_rows = 0, None, None
    if ptype == PAGE_DATA:
        sub = field(raw, PH_DATA_V1, TType.STRUCT, "data_page_header")
        num_values = _int(sub, DPH_NUM_VALUES, "page num_values")
        encoding = _int(sub, DPH_ENCODING, "page encoding")
    elif ptype == PAGE_DATA_V2:
        sub = field(raw, PH_DATA_V2, TType.STRUCT, "data_page_header_v2")
        num_values = _int(sub, DPH2_NUM_VALUES, "page num_values")
        encoding = _int(sub, DPH2_ENCODING, "page encoding")
        num_rows = _int(sub, DPH2_NUM_ROWS, "page num_rows")
    elif ptype == PAGE_DICTIONARY:
        field(raw, PH_DICT, TType.STRUCT, "dictionary_page_header")
    else:
        raise CorruptFileError(f"unexpected Parquet page type {ptype}")
    return PageHeaderInfo(ptype, hlen, _int(raw, PH_UNCOMPRESSED, "uncompressed_page_size"),
                          comp, num_values, encoding in DICTIONARY_ENCODINGS, num_rows)
