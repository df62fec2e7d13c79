"""The ground floor: errors, file I/O, and every format that more than one stage reads or writes."""
