"""`python -m omnikernel -f CONNECTION_FILE`: what the kernelspec runs."""

from omnikernel.kernel.app import OmniKernelApp

if __name__ == "__main__":
    OmniKernelApp.launch_instance()
