//! Layer tar streams: deterministic writer (PAX, xattrs, hard links, whiteouts), safe reader, gzip/zstd.
