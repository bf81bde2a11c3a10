from aiorch.cli import main

main()
