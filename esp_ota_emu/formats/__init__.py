"""Pure on-flash structures, one module per format, as construct definitions."""
