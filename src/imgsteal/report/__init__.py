"""HTML reports, tables and image galleries."""
