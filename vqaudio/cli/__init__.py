"""The ``vqaudio`` command line."""
