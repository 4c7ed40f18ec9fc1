"""ddpmlab.data: download, preparation and the prepared splits."""
