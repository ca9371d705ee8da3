"""A DNS server (PyPI dnslib) for the dns-01 test of tests/acme.rs: answers TXT queries for
NAME from the files in a directory (one file per name, one record per line), NXDOMAIN otherwise.
Usage: dns_server.py DIR PORT_FILE; binds 127.0.0.1 on an ephemeral UDP port and writes the port
to PORT_FILE once it serves. The certbot hook (dns_hook.sh) writes the files.
"""
import os, sys, time

from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSServer

DIR, PORT_FILE = sys.argv[1], sys.argv[2]


class Files(BaseResolver):
    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        path = os.path.join(DIR, name)
        if request.q.qtype == QTYPE.TXT and os.path.exists(path):
            for line in open(path).read().split():
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(line), ttl=1))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


server = DNSServer(Files(), address="127.0.0.1", port=0)
server.start_thread()
port = server.server.server_address[1]
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(port))
os.rename(PORT_FILE + ".tmp", PORT_FILE)
while server.isAlive():
    time.sleep(0.2)
