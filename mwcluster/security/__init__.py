"""Who may talk to a cluster: CURVE keys, the principals allowed, what each role may do.

keys.py     keypairs and principals in files (`mwcluster keys new`), read and checked
access.py   the roles and what each may ask: the one table every server consults
curve.py    sockets: a server's CURVE setup with its ZAP handler (Gate), a client's, and the
            handshake watch that names a refused connection's cause
"""
