"""The typed declaration layer: catalog, presets and stack files, validated once into plain values."""
