"""Pure decision logic: no sockets, no trio, no OpenSSL connections, no clocks."""
