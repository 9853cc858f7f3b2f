"""Using every core: front-end processes doing the HTTP work for the one core process."""
