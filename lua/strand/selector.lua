-- strand.selector — Python's selectors and select.select for strand: selector.new([backend])
-- with the "epoll", "poll" and "select" backends, and selector.select(r, w, x [, timeout]).
-- Everything lives in csrc/selector.c; this module only names it.
return require("strand.core").selector
