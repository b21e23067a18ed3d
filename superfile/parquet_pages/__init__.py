"""Row selection for Parquet through the page index: Thrift compact codec, footer and
page-index parsing, and ``RowFetcher`` that decodes only the pages holding chosen rows."""

from quiver.superfile.parquet_pages.row_fetch import RangeFile, RowFetcher, read_footer

__all__ = ["RangeFile", "RowFetcher", "read_footer"]
