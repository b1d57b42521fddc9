# How this module was built (included by every compiled module of mlpgx).
# setup.py defines MLPGX_DEBUG_BUILD=1 for MLPGX_DEBUG_BUILD=1 builds
# (Cython bounds and initialisation checks, -O0 -g); CI's second run checks
# that it tests such a build, not release objects a shared build tree kept.

cdef extern from *:
    """
    #ifndef MLPGX_DEBUG_BUILD
    #define MLPGX_DEBUG_BUILD 0
    #endif
    """
    int MLPGX_DEBUG_BUILD_FLAG "MLPGX_DEBUG_BUILD"

#: Whether this module is a debug build (``MLPGX_DEBUG_BUILD=1 pip install .``).
DEBUG_BUILD = bool(MLPGX_DEBUG_BUILD_FLAG)
