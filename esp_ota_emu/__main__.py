"""``python -m esp_ota_emu`` is the ``esp-ota-emu`` command."""

from .cli.main import main

main()
