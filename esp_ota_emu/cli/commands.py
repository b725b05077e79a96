"""Imports every command module so that each registers its commands on the ``cli`` group."""

# One import per command module; keep sorted.
from . import diff  # noqa: F401
from . import fleet  # noqa: F401
from . import image_info  # noqa: F401
from . import info  # noqa: F401
from . import lifecycle  # noqa: F401
from . import mkflash  # noqa: F401
from . import mkimage  # noqa: F401
from . import ota  # noqa: F401
from . import partitions_cmd  # noqa: F401
from . import powercut  # noqa: F401
from . import qemu  # noqa: F401
from . import scenario  # noqa: F401
from . import security  # noqa: F401
from . import serve  # noqa: F401
