"""Kernel-protocol conformance (jupyter_kernel_test). Plain text is a prompt in this kernel,
so the samples are `%%python` cells."""

from __future__ import annotations

import os
import tempfile
import unittest

import jupyter_kernel_test as jkt


class OmniKernelConformance(jkt.KernelTests):
    kernel_name = "omnikernel"
    language_name = "markdown"
    file_extension = ".md"

    code_hello_world = "%%python\nprint('hello, world')"
    code_stderr = "%%python\nimport sys; print('test', file=sys.stderr)"
    code_execute_result = [{"code": "%%python\n6 * 7", "result": "42"}]
    code_display_data = [
        {
            "code": "%%python\nfrom IPython.display import HTML, display; display(HTML('<b>t</b>'))",
            "mime": "text/html",
        }
    ]
    completion_samples = [{"text": "%%python\nimport optpar", "matches": {"optparse"}}]
    code_inspect_sample = "%%python\nprint"
    code_generate_error = "%%python\nraise ValueError('boom')"
    code_clear_output = "%%python\nfrom IPython.display import clear_output; clear_output()"
    code_page_something = "%%python\nprint?"
    complete_code_samples = ["%%python\nx = 1", "Fix the failing test in tests/", "%agent"]
    incomplete_code_samples = ["%%python\nfor i in range(3):"]

    @classmethod
    def setUpClass(cls) -> None:
        cls._tmp = tempfile.TemporaryDirectory()
        cls._saved = {k: os.environ.get(k) for k in ("OMNIKERNEL_STORE", "OMNIKERNEL_STATE_DIR")}
        os.environ["OMNIKERNEL_STORE"] = os.path.join(cls._tmp.name, "s.sqlite3")
        os.environ["OMNIKERNEL_STATE_DIR"] = os.path.join(cls._tmp.name, "state")
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        for key, value in cls._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        cls._tmp.cleanup()

    def test_python_cells_join_the_input_history(self) -> None:
        self.flush_channels()
        self.execute_helper("%%python\n1 + 1")
        self.kc.history(hist_access_type="tail", n=5)
        reply = self.kc.get_shell_msg(timeout=30)
        assert any("1 + 1" in entry[2] for entry in reply["content"]["history"])

    def test_kernel_info_names_the_omnigent_kernel(self) -> None:
        self.flush_channels()
        msg_id = self.kc.kernel_info()
        reply = self.kc.get_shell_msg(timeout=30)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["implementation"] == "omnikernel"
        assert "Omnigent" in reply["content"]["banner"]


if __name__ == "__main__":
    unittest.main()
