"""Server-rendered HTML pages (the share-code page)."""
