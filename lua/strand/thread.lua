return require("strand.core").thread
