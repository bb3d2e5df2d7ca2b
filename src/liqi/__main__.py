from liqi.cli.main import main

main()
