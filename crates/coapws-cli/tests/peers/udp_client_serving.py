"""aiocoap as a CoAP-over-UDP *client* that also serves resources on its socket (role reversal).

Usage: udp_client_serving.py MODE URI PAYLOAD

MODE chooses how the aiocoap context (UDP only, transport "udp6") is made:
  client  Context.create_client_context(transports=["udp6"]) with `serversite` set afterwards
          (a client socket on an ephemeral port of "::", dual-stack);
  server  Context.create_server_context(site, bind=("127.0.0.1", 0), transports=["udp6"])
          (a server socket on an ephemeral port of 127.0.0.1).
Either way the context sends GET URI from that one socket and serves /whoami on it, answering
2.05 with PAYLOAD, so the server can ask back at the address the request came from.

Prints three lines, "code=X.YY", "payload=<text>" and "whoami-asked=<count>", and exits 0;
exits 2 on timeout or error.
"""

import asyncio
import sys

import aiocoap
import aiocoap.resource as resource


class WhoAmI(resource.Resource):
    def __init__(self, payload):
        super().__init__()
        self.payload = payload
        self.asked = 0

    async def render_get(self, request):
        self.asked += 1
        print(f"/whoami asked by {request.remote}", file=sys.stderr)
        return aiocoap.Message(code=aiocoap.CONTENT, payload=self.payload)


async def main(mode, uri, payload):
    site = resource.Site()
    whoami = WhoAmI(payload)
    site.add_resource(["whoami"], whoami)
    if mode == "client":
        ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
        ctx.serversite = site
    elif mode == "server":
        ctx = await aiocoap.Context.create_server_context(
            site, bind=("127.0.0.1", 0), transports=["udp6"]
        )
    else:
        raise ValueError(f"unknown mode {mode!r}")
    try:
        request = aiocoap.Message(code=aiocoap.GET, uri=uri)
        response = await asyncio.wait_for(ctx.request(request).response, 20)
        print(f"code={response.code.dotted}")
        print(f"payload={response.payload.decode('utf-8', 'replace')}")
        print(f"whoami-asked={whoami.asked}")
        sys.stdout.flush()
    finally:
        await ctx.shutdown()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: udp_client_serving.py client|server URI PAYLOAD")
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3].encode()))
    except Exception as e:  # noqa: BLE001 - any failure is reported to the test
        print(f"error: {e!r}", file=sys.stderr)
        sys.exit(2)
