"""``python -m services.gateway``: run the gateway alone (distributed mode)."""

from __future__ import annotations

import asyncio

from im.adapters.factory import build_backends
from im.config import Settings
from im.runtime import install_uvloop, run_until_signal, setup_logging
from services.gateway.app import build


async def _main(settings: Settings) -> None:
    backends = build_backends(settings)
    service = build(settings, backends)

    async def stop() -> None:
        try:
            await service.stop()
        finally:
            await backends.close()

    await run_until_signal(service.start, stop)


def main() -> None:
    settings = Settings()
    setup_logging(settings, "gateway")
    install_uvloop()
    asyncio.run(_main(settings))


if __name__ == "__main__":
    main()
