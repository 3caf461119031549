from tracetui.cli.main import main

main()
