"""ddpmlab.pipeline.data: acquisition (downloads, archives, dataset presets), preparation and the prepared splits."""
