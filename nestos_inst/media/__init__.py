"""Operations on live media files (ISO images): open, edit, extract, pack.

The command line in nestos_inst.cli parses arguments and prints; everything that reads
or rewrites an image lives here, so other front ends (and tests) can call it directly.
"""
