return require("strand.core").serial
