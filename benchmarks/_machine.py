"""What every benchmark figure is quoted with: the CPU model name.

Shared by the scripts in this folder (each is run as `python benchmarks/x.py`,
so this folder is on sys.path). Figures measured on one CPU do not transfer to
another (AVX-512 Xeon against AVX2-only EPYC moved the CRF ratio by 2-3x), so
every report names the CPU it ran on.
"""

import platform
import subprocess


def cpu_model_name():
    """`lscpu`'s "Model name", or the platform's processor string where lscpu is missing."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags_summary():
    """The widest x86 vector extension the CPU reports ("AVX-512", "AVX2", ...), or ""."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return ""
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2")):
        if flag in flags:
            return name
    return ""


def cpu_description():
    """Model name plus the widest vector extension, e.g. "AMD EPYC 7B13 (AVX2)"."""
    name, vector = cpu_model_name(), cpu_flags_summary()
    return f"{name} ({vector})" if vector else name
