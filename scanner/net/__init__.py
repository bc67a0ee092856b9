"""I/O shell: trio code that moves bytes for the pure core."""
