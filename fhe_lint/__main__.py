from fhe_lint.cli import main

main()
