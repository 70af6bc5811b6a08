"""Media access: the ffmpeg binary, container probing, audio decoding."""
