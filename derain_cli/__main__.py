from derain_cli.cli.app import main

main()
