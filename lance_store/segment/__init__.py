"""A segment: its batch header, its file names, its writer and its reader.

Format constants live in `header` and `naming`; nothing outside this package
builds batch bytes by hand.
"""
