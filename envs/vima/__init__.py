"""VIMA-style multimodal-prompt tasks on the MuJoCo tabletop suite."""
