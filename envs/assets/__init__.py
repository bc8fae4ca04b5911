"""MJCF files of the tabletop suite (package so that the XML files ship with the wheel)."""
