"""Wing: the webcam demo (frame sources, inference, the demo and photo command lines, export, calibration, camera shifts and frames without a character, the robust model)."""
