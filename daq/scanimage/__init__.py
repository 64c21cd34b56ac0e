"""ScanImage frame sources: its Premium ZeroMQ stream, our MATLAB bridge, its TIFF files.

See docs/scanimage.md. Chosen with ``[daq] source = "scanimage" | "scanimage-bridge" |
"tiff"`` (wired in daq/process.py); stand-ins for all three live in daq/standins/.
"""
