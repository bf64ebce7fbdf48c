"""The first lines of a script run in a fresh interpreter that must behave as if unicon_hf were not installed,
so only a repo's own copied code can serve (Hub `trust_remote_code` loading)."""

WITHOUT_UNICON = '''import sys, importlib.abc

class BlockUnicon(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "unicon_hf" or name.startswith("unicon_hf."):
            raise ModuleNotFoundError("No module named " + repr(name))
        return None

sys.meta_path.insert(0, BlockUnicon())
'''
