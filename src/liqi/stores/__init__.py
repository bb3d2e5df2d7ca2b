"""Where the objects of a bucket live: the :class:`Store` seam and its backends.

- :class:`LocalStore` (``local``, the default): files under a folder of ``LIQI_HOME``.
- ``liqi.stores.s3.S3Store`` (``s3``): any S3-compatible server; needs ``liqi[s3]``.
- ``liqi.stores.oss.OssStore`` (``oss``): Alibaba Cloud OSS; needs ``liqi[oss]``.

The remote backends are imported from their modules by whoever builds them, so boto3 and
oss2 stay optional. :mod:`liqi.stores.base` holds the contract every backend keeps.
"""

from __future__ import annotations

from liqi.stores.base import Listing, ObjectInfo, ObjectReader, Store
from liqi.stores.local import LocalStore

__all__ = ["Listing", "LocalStore", "ObjectInfo", "ObjectReader", "Store"]
