"""Write empty placeholder wheels (NAME==VERSION ...) into a folder, for pip resolutions that must
see a package as present at a pinned version without fetching it (the device image's torch stack)."""

import base64
import hashlib
import os
import sys
import zipfile

out = sys.argv[1]
for spec in sys.argv[2:]:
    name, ver = spec.split("==")
    dist = name.replace("-", "_")
    fn = f"{dist}-{ver}-py3-none-any.whl"
    di = f"{dist}-{ver}.dist-info"
    files = {
        f"{di}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n",
        f"{di}/WHEEL": "Wheel-Version: 1.0\nGenerator: stub\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    rec = []
    with zipfile.ZipFile(os.path.join(out, fn), "w") as z:
        for p, c in files.items():
            z.writestr(p, c)
            h = base64.urlsafe_b64encode(hashlib.sha256(c.encode()).digest()).rstrip(b"=").decode()
            rec.append(f"{p},sha256={h},{len(c)}")
        rec.append(f"{di}/RECORD,,")
        z.writestr(f"{di}/RECORD", "\n".join(rec) + "\n")
    print(fn)
