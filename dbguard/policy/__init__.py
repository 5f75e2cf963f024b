"""Policy as code: the rule files (`rules`), the pure decision function (`engine`), the rule
files' own test cases (`rule_tests`), static checks (`lint`) and the runtime decision point with
its caches (`gate`). Everything here but `gate` is pure and importable without the runtime.
"""
