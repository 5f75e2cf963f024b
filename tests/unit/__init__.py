# tests.unit — pure, fast tests: byte-level codecs, analyser, policy; no servers, no sockets.
