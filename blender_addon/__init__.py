"""pix2dance Blender add-on (placeholder until the add-on issue lands)."""
