from tse_cli.cli import main

main()
