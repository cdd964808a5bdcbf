"""aiocoap observing a resource: the registration's response and later notifications.

Usage: observe_client.py URI COUNT [PROXY]

Registers an observation of URI (any scheme aiocoap's default client transports speak: coap,
coap+tcp, coap+ws) and prints one line "n=<payload>" for the first response and for each
notification, until COUNT lines are printed; then cancels the observation and exits 0.
Exits 2 if the observation ends early, or on a timeout (20 s) or any error. With PROXY (a
URI like coap+ws://127.0.0.1:8683), the request goes through that forward proxy as
aiocoap-client --proxy sends it (Proxy-Scheme, Uri-Host, Uri-Port).
"""

import asyncio
import sys

import aiocoap
import aiocoap.proxy.client


async def main(uri, count, proxy):
    ctx = await aiocoap.Context.create_client_context()
    try:
        request = aiocoap.Message(code=aiocoap.GET, uri=uri, observe=0)
        if proxy:
            req = aiocoap.proxy.client.ProxyForwarder(proxy, ctx).request(request)
        else:
            req = ctx.request(request)
        first = await asyncio.wait_for(req.response, 20)
        if not first.code.is_successful():
            raise RuntimeError(f"registration answered {first.code}")
        print(f"n={first.payload.decode('utf-8', 'replace')}", flush=True)
        seen = 1
        async def follow():
            nonlocal seen
            async for n in req.observation:
                print(f"n={n.payload.decode('utf-8', 'replace')}", flush=True)
                seen += 1
                if seen >= count:
                    return
            raise RuntimeError("observation ended before enough notifications")
        if seen < count:
            await asyncio.wait_for(follow(), 20)
        req.observation.cancel()
    finally:
        await ctx.shutdown()


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: observe_client.py URI COUNT [PROXY]")
    try:
        proxy = sys.argv[3] if len(sys.argv) == 4 else None
        asyncio.run(main(sys.argv[1], int(sys.argv[2]), proxy))
    except Exception as e:  # noqa: BLE001 - any failure is reported to the test
        print(f"error: {e!r}", file=sys.stderr)
        sys.exit(2)
