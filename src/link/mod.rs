/*! Links: serial ports, TCP serial bridges and capture replay. They move bytes and know no protocol. */
