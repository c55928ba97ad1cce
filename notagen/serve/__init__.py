"""notagen studio: `notagen serve`, a web page and an HTTP API to generate, see and hear pieces."""
